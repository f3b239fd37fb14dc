"""tuneforge.rag"""
