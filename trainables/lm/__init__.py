"""Language-model trainable: a GPT trained one pass over a token stream (the paper's LLM regime)."""
