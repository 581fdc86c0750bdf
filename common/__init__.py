"""What all four processes share: database engines, JSON errors, fault modes."""
