// The label value of positions that do not count in the masked-LM loss: PyTorch's
// CrossEntropyLoss `ignore_index` default, which transformers' data collators write too. The
// masking (data/masking.ts) writes it and the model's loss (training/models/) skips it, so the one
// value lives below both.
export const IGNORE_INDEX = -100;
