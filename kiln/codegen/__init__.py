"""Codegen: lower fused groups to scheduled PrimFuncs, assemble Relax, build, run."""
