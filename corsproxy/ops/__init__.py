"""Running it: metrics and the admin listener, logs, and the worker supervisor. Imports
`config` and `policy` only, never `http` or `commands`.
"""
