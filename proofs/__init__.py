"""Certificates of the paper's statements (V1-V14) and findings (F1-F6).

Each certificate is one small function registered with :func:`fibration_theory.proofs.registry.certificate`;
``fibration verify`` runs them all. Importing this package imports every certificate module.
"""
