"""Generated code of keyscope/v1/*.proto (scripts/gen-protos). Do not edit the *_pb2* files."""
