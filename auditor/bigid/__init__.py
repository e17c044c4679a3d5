"""The BigID REST client (fetch stage) and its wire models."""
