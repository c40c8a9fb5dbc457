#!/usr/bin/env python3
"""Write tests/fixtures/tasks/mmlu_tiny.zip: two MMLU subjects in the layout of
the hendrycks release (data/{dev,test}/<subject>_<split>.csv, deflated), with a
quoted field holding a comma and a question with surrounding spaces, for
tests/test_tasks.c. Run from the repository root."""
import zipfile

FILES = {
    "data/dev/anatomy_dev.csv": 'Dev one?,a1,b1,c1,d1,B\nDev two?,a2,"b2, with comma",c2,d2,D\n',
    "data/test/anatomy_test.csv": '  What is x?  ,x1,x2,x3,x4,C\n"Quoted ""q""",p,q,r,s,A\n',
    "data/dev/high_school_biology_dev.csv": "Bio dev?,e,f,g,h,A\nBio dev 2?,i,j,k,l,B\n",
    "data/test/high_school_biology_test.csv": "Cells?,one,two,three,four,D\n",
}
with zipfile.ZipFile("tests/fixtures/tasks/mmlu_tiny.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("data/", "")
    for name, text in FILES.items():
        z.writestr(name, text)
