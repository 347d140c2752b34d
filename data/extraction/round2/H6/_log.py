import csv,sys,os
f='/work/main/data/extraction/round2/H6/_searchlog.tsv'
# usage: python _log.py corpus n_results n_new "query" "notes"
with open(f,'a') as fh:
    fh.write('\t'.join(sys.argv[1:6]).replace('\n',' ')+'\n')
