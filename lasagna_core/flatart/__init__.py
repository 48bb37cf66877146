"""Relighting data from real flat art (emoji packages): loading, inflation to a height field, relighting."""
