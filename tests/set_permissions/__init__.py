"""KeyService.SetPermissions: Unkey's `keys.setPermissions` (seed 004) over gRPC, one module per outcome."""
