// Whether a webgpu test file runs here: with an adapter (software ones count), yes; without one it
// skips with the probe's reason, or FAILS when MLM_REQUIRE_WEBGPU=1 (which CI sets). Any other
// value of the variable fails too, so that a typo cannot turn a suite into a silent skip. The same
// rule as tests/training/webgpu.test.ts, for the smaller webgpu test files.
import { test } from 'node:test';
import { probeWebGpu } from '../../training/backend.ts';

/**
 * The `skip` option for a file's webgpu tests: false when they run, else the reason. When the
 * adapter is required and missing, registers one failing test named after `suite` saying why.
 */
export async function webgpuSkip(suite: string): Promise<false | string> {
  const flag = (process.env.MLM_REQUIRE_WEBGPU ?? '').trim();
  if (flag !== '' && flag !== '0' && flag !== '1') {
    const reason = `MLM_REQUIRE_WEBGPU must be 1 or 0, not '${flag}'`;
    test(`${suite}: a WebGPU adapter`, () => {
      throw new Error(reason);
    });
    return reason;
  }
  const probe = await probeWebGpu();
  if (probe.ok) return false;
  const reason = `no WebGPU adapter: ${probe.reason}`;
  if (flag === '1') {
    test(`${suite}: a WebGPU adapter (MLM_REQUIRE_WEBGPU=1)`, () => {
      throw new Error(reason);
    });
  }
  return reason;
}
