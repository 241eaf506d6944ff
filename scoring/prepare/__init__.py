"""Prompt preparation: raw datasets into verl's schema, and mixed-domain sets (`rollouts prepare`).

`build.prepare(KIND, SOURCE, PrepareOptions)` converts one dataset; `mix.mix(...)` combines
prepared sets in chosen proportions. Sources, kinds, code tests and templates have a module each.
"""
