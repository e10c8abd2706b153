"""The command line: the click commands, `explain` and the demo upstream. The top
layer: it may import every other.
"""
