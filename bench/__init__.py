"""Side-by-side ratio benchmarks: each Baton figure next to a baseline measured in the same run."""
