"""The model and its training.

- `vit`: `create_model` (timm ViTs), `token_count`, `count_parameters`
- `baseline`: the fine-tuned baseline, cached by content hash
- `checkpoint`: reading `model.checkpoint` files (safetensors or torch.save, weights only)
- `_hf_vit` (private, read by `checkpoint`): a Hugging Face ViT state_dict renamed to
  timm's layout
- `train`: `fit` (seeded, deterministic), `accuracy`, the distillation loss
"""
