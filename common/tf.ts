// The `@tensorflow/tfjs` module namespace as a type. Every function of mlmkit that runs TF.js
// takes it as an argument (`tf`) instead of importing the package itself, so the caller decides
// which TF.js instance (and backend) runs: the CLI's, a library user's, or a test's.
import type * as TfModule from '@tensorflow/tfjs';

export type Tf = typeof TfModule;
