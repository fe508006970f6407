"""Root-key authentication and authorization, across every keyscope.v1 RPC (every_rpc.RPCS)."""
