"""Placeholder: replaced by the module that defines these commands."""
