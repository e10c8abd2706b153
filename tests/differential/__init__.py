"""An exchange-isolation fuzzer (issue 11, section 7).

Several raw-socket clients drive a real `corsproxy serve` process in front of a scripted
upstream that answers every request according to a script the client chose (well-formed
answers, and misbehaving ones: bodies on bodiless answers at once or in a later write,
interim answers with a body, late forged bytes, resets; trailers on chunked answers). Every
answer is tagged with the id of the request it answers; `check.py` then proves, from what the
clients received and what the upstream saw, that no exchange leaked into another.

Run it with `python -m tests.differential.fuzz --seconds 60 [--seed N]`.
"""
