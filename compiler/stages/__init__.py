"""The compile stages, in the order `compiler.pipeline.compile_model` runs them."""
