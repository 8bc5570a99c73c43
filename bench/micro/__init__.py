"""bench.micro: small side-by-side micro-benchmarks of dlcore components against their torch references."""
