"""Black-box tests against real applications nobody here wrote (Flask, Django) under a
real server (gunicorn), through a real corsproxy."""
