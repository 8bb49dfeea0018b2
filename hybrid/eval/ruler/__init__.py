"""Running RULER on a model: ``runner`` (generate and score the samples of ``hybrid.tasks``),
``scoring`` (RULER's string-match scores), ``report`` (table, JSON, heat map) and ``checkpoint``
(loading a trained model folder). See docs/ruler.md."""
