"""Built-in edit templates (TOML); installed as the `lasagna_templates` package."""
