"""The policy, pure: origins, paths, routes, the CORS decision and the browser model.

No I/O and no aiohttp or asyncio here; these modules import only each other and the
standard library (and the regex engine). Everything above executes what they decide.
"""
