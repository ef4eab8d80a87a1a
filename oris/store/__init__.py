"""Persistence: SQLAlchemy Core tables and queries. The only package that speaks SQL."""
