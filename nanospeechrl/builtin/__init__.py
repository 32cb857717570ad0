"""The built-in speech corpus, made locally: a text grammar (grammar.py, lexicon.py, tasks.py)
spoken by eSpeak NG (synth.py) into JSONL manifests + WAV files (corpus.py). Nothing on a
training path imports it except to build that corpus: real data goes through data.py alone."""
