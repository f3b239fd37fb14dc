"""tuneforge.eval"""
