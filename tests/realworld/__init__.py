"""Real servers for black-box tests: nginx, gunicorn with small Flask and Django apps."""
