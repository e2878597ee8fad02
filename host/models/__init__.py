"""Small reference models for the accelerator (they need torch; importing this
package does not)."""
