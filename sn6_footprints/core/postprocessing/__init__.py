"""Turning a model's probability maps into building instances, apart from vectorising."""
