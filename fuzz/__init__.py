"""Coverage-guided fuzzing of ``interop``'s parsers (atheris); see ``fuzz/README.md``."""
