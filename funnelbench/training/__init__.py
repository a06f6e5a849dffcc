"""Training as composed parts (``funnelbench.train`` re-exports every public name).
"""
