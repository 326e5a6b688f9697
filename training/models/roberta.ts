// RoBERTa for masked language modelling: BERT's blocks (bert.ts) with RoBERTa's names
// (`roberta.*`, `lm_head.*`), its position ids, and its head activation.
//
// What differs from BERT (transformers' RobertaEmbeddings / RobertaLMHead):
// - Position ids count real tokens from pad_token_id + 1; padding tokens get pad_token_id
//   (`create_position_ids_from_input_ids`), so max_position_embeddings is 514 for 512 tokens.
// - type_vocab_size is 1 in the released checkpoints: token type 0 everywhere.
// - The head's activation is always the exact erf GELU (RobertaLMHead calls `gelu` directly),
//   whatever hidden_act says; the encoder uses hidden_act.
//
// References: transformers `models/roberta/modeling_roberta.py`; Liu et al. 2019.
import type { Tensor2D } from '@tensorflow/tfjs';
import { InputError } from '../../common/errors.ts';
import { BERT_FAMILY, buildMaskedLM, createBert, type FamilySpec, type MaskedLM, type ModelInit, type Tf } from './bert.ts';
import type { ModelConfig } from './config.ts';

/**
 * pad_token_id + (running count of non-padding tokens) at real tokens, pad_token_id at padding:
 * ids [B, T] -> int32 [B, T]. A padding id in the middle of a row keeps the count where it was.
 */
export function robertaPositionIds(tf: Tf, inputIds: Tensor2D, padTokenId: number): Tensor2D {
  return tf.tidy(() => {
    const real = tf.cast(tf.notEqual(inputIds, tf.scalar(padTokenId, 'int32')), 'int32'); // [B, T]
    const counts = tf.cast(tf.cumsum(real, 1), 'int32');
    return tf.add(tf.mul(counts, real), tf.scalar(padTokenId, 'int32')) as Tensor2D;
  });
}

export const ROBERTA_FAMILY: FamilySpec = {
  family: 'roberta',
  head: { dense: 'lm_head.dense', layerNorm: 'lm_head.layer_norm', bias: 'lm_head.bias' },
  positionIds: (tf, inputIds, config) => robertaPositionIds(tf, inputIds, config.pad_token_id),
  // The largest position id is pad_token_id + T.
  maxSequenceLength: (config) => config.max_position_embeddings - config.pad_token_id - 1,
  headActivation: () => 'gelu',
};

/**
 * A RoBERTa masked LM (transformers' RobertaForMaskedLM) on `tf`'s active backend: fresh weights
 * from `{ seed }`, or `{ weights }` from `importWeights` (weights.ts).
 */
export function createRoberta(tf: Tf, config: ModelConfig, init: ModelInit): MaskedLM {
  return buildMaskedLM(tf, config, init, ROBERTA_FAMILY);
}

/** The masked LM of `config.model_type`. */
export function createMaskedLM(tf: Tf, config: ModelConfig, init: ModelInit): MaskedLM {
  switch (config.model_type) {
    case 'bert':
      return createBert(tf, config, init);
    case 'roberta':
      return createRoberta(tf, config, init);
    default:
      throw new InputError(`model_type ${String((config as { model_type: unknown }).model_type)} is not supported`);
  }
}

/** The longest input (tokens, specials included) the model's position table allows, by family. */
export function maxSequenceLength(config: ModelConfig): number {
  return (config.model_type === 'roberta' ? ROBERTA_FAMILY : BERT_FAMILY).maxSequenceLength(config);
}
