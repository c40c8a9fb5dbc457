#!/usr/bin/env python3
"""Write tests/fixtures/tasks/: a task data folder in the layout of
../shared/data/eval for tests/test_tasks.c and test_postshare.sh:
  mmlu/mmlu.zip: three MMLU subjects in two of lm-eval's categories (anatomy and
    high_school_biology: stem; philosophy: humanities) as in the hendrycks release
    (data/{dev,test}/<subject>_<split>.csv, deflated), with a quoted field
    holding a comma, one holding "\r\n", and a question with surrounding spaces;
  piqa/valid.jsonl + valid-labels.lst: four PIQA-format questions.
Run from the repository root."""
import json
import zipfile

FILES = {
    "data/dev/anatomy_dev.csv": 'Dev one?,a1,b1,c1,d1,B\r\n"Dev\r\ntwo?",a2,"b2, with comma",c2,d2,D\r\n',
    "data/test/anatomy_test.csv": '  What is x?  ,x1,x2,x3,x4,C\n"Quoted ""q""",p,q,r,s,A\n',
    "data/dev/high_school_biology_dev.csv": "Bio dev?,e,f,g,h,A\nBio dev 2?,i,j,k,l,B\n",
    "data/test/high_school_biology_test.csv": "Cells?,one,two,three,four,D\nGenes?,five,six,seven,eight,B\n",
    "data/dev/philosophy_dev.csv": "Phil dev?,m,n,o,p,C\nPhil dev 2?,q,r,s,t,D\n",
    "data/test/philosophy_test.csv": "Being?,is,is not,both,neither,A\nKnow?,yes,no,maybe,never,B\n"
    "Ought?,can,must,may,will,C\n",
}
with zipfile.ZipFile("tests/fixtures/tasks/mmlu/mmlu.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("data/", "")
    for name, text in FILES.items():
        z.writestr(name, text)
PIQA = [("Open a jar", "Twist the lid.", "Hit it.", 0), ("Dry socks", "Eat them.", "Hang them up.", 1),
        ("Light a room", "Turn on the lamp.", "Close the eyes.", 0), ("Cool tea", "Boil it.", "Wait a while.", 1)]
with open("tests/fixtures/tasks/piqa/valid.jsonl", "w") as f:
    for g, a, b, _ in PIQA:
        f.write(json.dumps({"goal": g, "sol1": a, "sol2": b}) + "\n")
with open("tests/fixtures/tasks/piqa/valid-labels.lst", "w") as f:
    f.write("".join(f"{lab}\n" for *_, lab in PIQA))
