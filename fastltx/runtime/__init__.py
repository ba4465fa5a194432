"""Runtime policy: compilation (and, later, device placement, offloading, distribution)."""
