"""Generated contracts of selfimprove (``make protos``). Do not edit."""
