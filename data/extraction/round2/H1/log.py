import csv,sys,os
f='search_log.csv'
cols=['search_id','date','corpus','query','n_results','n_candidates_new','notes','source']
new=not os.path.exists(f)
rows=list(csv.DictReader(open(f))) if not new else []
corpus,query,n,notes=sys.argv[1:5]
sid='H1-S%03d'%(len(rows)+1)
rows.append(dict(search_id=sid,date='2026-11-30',corpus=corpus,query=query,n_results=n,n_candidates_new=0,notes=notes,source='search tool (stored public pages)'))
w=csv.DictWriter(open(f,'w',newline=''),fieldnames=cols);w.writeheader();w.writerows(rows)
print(sid)
