"""What crosses a boundary: records on the topics, the input schema, the labels, the settings.

Imports nothing else of the project; everything else may import it.
"""
