"""The running node: settings, the node itself, API keys, operations, claims, chain of title,
bundles, certificates, rotation. HTTP-free: `api/` and `cli/` are thin adapters over it."""
