#!/usr/bin/python3
"""Splits each evaluation's hallucinated CHAIR mentions into kinds (docs/results.md, "why").

  /usr/bin/python3 scripts/hallucination-kinds.py WORLD_DIR EVAL_DIR...

WORLD_DIR is an `mfpo world` directory (annotations.jsonl), each EVAL_DIR an `mfpo eval` output
(answers.jsonl) or a `mfpo train` output_dir (its eval/). A hallucinated mention is a "partner"
when it names the co-occurrence partner of an object in the image (the scene world's language
prior), a "swap" when some object of the image goes unnamed (a visible object named as another
kind), else "other". Also prints the share of descriptions that name no object.
"""
import json
import os
import sys

# The scene world's kinds (datagen/scene_world.cc WorldKinds): partner and synonyms.
PARTNER = {'ball': 'box', 'box': 'ball', 'tree': 'house', 'house': 'tree', 'car': 'kite', 'kite': 'car',
           'cup': 'clock', 'clock': 'cup', 'star': 'flower', 'flower': 'star'}
SYNONYM = {'sphere': 'ball', 'orb': 'ball', 'cube': 'box', 'crate': 'box', 'pine': 'tree', 'home': 'house',
           'cottage': 'house', 'building': 'house', 'automobile': 'car', 'vehicle': 'car', 'mug': 'cup',
           'blossom': 'flower'}


def canon(word):
    w = word.lower().strip('.,()')
    if w.endswith('es') and w[:-2] in PARTNER:
        w = w[:-2]
    elif w.endswith('s') and (w[:-1] in PARTNER or w[:-1] in SYNONYM):
        w = w[:-1]
    return SYNONYM.get(w, w)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    truth = {}
    with open(os.path.join(argv[1], 'annotations.jsonl')) as f:
        for line in f:
            a = json.loads(line)
            truth[a['id']] = set(a['objects'])
    for d in argv[2:]:
        path = os.path.join(d, 'answers.jsonl')
        if not os.path.exists(path):
            path = os.path.join(d, 'eval', 'answers.jsonl')
        with open(path) as f:
            rows = [r for r in map(json.loads, f) if r.get('suite') == 'chair']
        partner = swap = total = empty = 0
        for r in rows:
            objects = truth[r['id']]
            named = {canon(w) for w in r['answer'].split()}
            empty += r['mentions'] == 0
            for h in r['hallucinated']:
                total += 1
                if canon(h) in {PARTNER[o] for o in objects if o in PARTNER}:
                    partner += 1
                elif objects - named:
                    swap += 1
        pct = lambda n, m: 100.0 * n / max(m, 1)
        print(f'{d}: {total} hallucinated mentions: partner {partner} ({pct(partner, total):.0f}%), '
              f'swap {swap} ({pct(swap, total):.0f}%), other {total - partner - swap}; '
              f'descriptions naming no object {pct(empty, len(rows)):.1f}%')


if __name__ == '__main__':
    main(sys.argv)
