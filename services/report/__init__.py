"""The run report: what a run did and whether the model got better, as Markdown plus PNG plots."""
