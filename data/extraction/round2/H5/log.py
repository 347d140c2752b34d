import csv,sys,os
f='search_log.csv'
new=not os.path.exists(f)
rows=list(csv.reader(open(f))) if not new else []
n=len(rows)  # header counts
w=csv.writer(open(f,'a',newline=''))
if new:
    w.writerow(['search_id','date','corpus','query','n_results','n_candidates_new','notes','source']); n=1
corpus,query,nres,notes=sys.argv[1:5]
w.writerow([f'H5-S{n:03d}','2026-11-30',corpus,query,nres,0,notes,'search tool (stored public pages)'])
