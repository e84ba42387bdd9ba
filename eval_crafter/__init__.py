"""EvalCrafter-compatible evaluation: metrics, prompt metadata, runner and report."""
