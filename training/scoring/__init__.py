"""The score stage: every user of a feature snapshot scored into predictions and category_demand."""
