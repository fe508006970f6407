"""Keyscope's gRPC contract: the generated code of protos/keyscope/v1 lives in keyscope.v1."""
