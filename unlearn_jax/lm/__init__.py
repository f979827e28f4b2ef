"""Language-model track: question–answer SEDs, their tokenizer, and LM training and unlearning.

`corpus` writes the offline corpus (fictitious entities, templated questions and answers, and
paraphrases); `data` builds question–answer SEDs with provenance from it, from a user's JSONL or
from a tfds QA dataset; `tokenizer` turns question–answer pairs into token arrays. Submodules are
imported where needed, so importing this package stays cheap.
"""
