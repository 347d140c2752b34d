import csv,sys,os
f='search_log.csv'
new=not os.path.exists(f)
rows=list(csv.reader(open(f))) if not new else []
n=len(rows)-1 if rows else 0
with open(f,'a',newline='') as fh:
    w=csv.writer(fh)
    if new: w.writerow(['search_id','date','corpus','query','n_results','n_candidates_new','notes','source'])
    # args: corpus, query, n_results, n_cand, notes
    a=sys.argv[1:]
    n+=1
    w.writerow([f'H8-S{n:03d}','2026-11-30',a[0],a[1],a[2],a[3],a[4],'search tool (stored public pages)'])
print(n)
