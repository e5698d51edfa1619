"""The refinement stage: inference-time strategies measured on the dev set and served over gRPC."""
