"""LoRA adapters shipped with the project, one directory each (served by default under the
directory's name; see greyelephant/shipped.py)."""
