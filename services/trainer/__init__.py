"""The trainer service: LoRA SFT, DPO and full fine-tuning of the policy on the loop's own data."""
