"""Shared test helpers: one copy of each (a tiny ViT, image folders, loopback clusters, the
processes and records a sweep leaves), imported by tests at any depth."""
