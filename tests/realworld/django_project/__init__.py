"""A minimal Django project with the admin, for the black-box tests (tests/realworld)."""
