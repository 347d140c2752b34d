import csv, pandas as pd
OUT='/work/main/data/extraction/round2/H6/'
cols="result_id,study_id,domain,measure,definition,arm,timepoint,timepoint_months,n,events,percent,unit,mean_pre,sd_pre,mean_post,sd_post,mean_change,sd_change,median_pre,q1_pre,q3_pre,min_pre,max_pre,median_post,q1_post,q3_post,min_post,max_post,estimate,p_value,ci_level,ci_lb,ci_ub,n_infusions,source,url,location,notes,subgroup,supersedes,extraction_level,quote,comparison".split(',')
rows=[]
def add(**k):
    r={c:'' for c in cols}; r.update(k); rows.append(r)
add(result_id='hara2003-r2-01',study_id='hara2003',domain='response',measure='responders',
    definition="physicians' assessment: improved",arm='ig',timepoint='12 weeks after infusion',timepoint_months='3',
    n='8',events='7',percent='87.5',source='PMID:24387253',url='https://www.pubmed.gov/24387253/',location='abstract',
    notes="Adds the printed count: abstract gives 87.5% improved and separately '7 patients who exhibited improvement' (denominator = 8 analysed of 12 treated). Follow-up 'up to 3 months'; timepoint printed as 12 weeks.",
    subgroup='all',supersedes='hara2003-05',extraction_level='abstract',
    quote="The physicians' assessment showed that 87.5% of patients had improved. The average reduced dose of prednisolone was 47.1 mg/day at 12 weeks after infusion in 7 patients who exhibited improvement.")
add(result_id='lim2021-r2-01',study_id='lim2021',domain='response',measure='responders',
    definition='at least moderate improvement on the 2016 ACR/EULAR Total Improvement Score (primary outcome)',arm='ig',
    timepoint='9 weeks',n='19',events='8',percent='42.0',estimate='',ci_level='0.95',ci_lb='19.6',ci_ub='64.6',
    source='PMID:33099648',url='https://pmc.ncbi.nlm.nih.gov/articles/PMC8023983',location='abstract',
    notes="Single consolidated row replacing the duplicate pair lim2021-01 (measure responders) and lim2021-06 (measure tis, originally extracted as lim2020-01); both supersede ids are listed separated by ';'. Clopper-Pearson 95% CI as printed. 20 enrolled/treated; 1 excluded from analyses (minimal weakness, ceiling effect). IVIg (Privigen) monotherapy, first-line. 7 patients needed rescue medication and ended the study early. Per-subtype TIS results are not in the abstract; full text/tables not reachable in the stored pages (only the page opening/abstract is returned).",
    subgroup='all',supersedes='lim2021-01;lim2021-06',extraction_level='abstract',
    quote='Eight patients (8/19 = 42.0%; Clopper–Pearson 95% CI: 19.6, 64.6) had at least moderate improvement by 9 weeks. Of these, six reached improvement by 3 weeks.')
add(result_id='lim2021-r2-02',study_id='lim2021',domain='safety',measure='ae_serious',
    definition='serious adverse events',arm='ig',timepoint='within study (9-week treatment period)',
    n='',events='',source='PMID:33099648',url='https://proxy.weglot.com/wg_31e3b69165a930b5a27173d9b265f5a52/nl/en/pubmed.ncbi.nlm.nih.gov/33099648',location='abstract (Results)',
    notes="Corrects lim2021-04: the abstract counts 3 serious adverse EVENTS (episodes, not patients), so events (patients) is left empty; number of patients with an SAE and the safety denominator (20 treated?) are not printed in the abstract. One SAE was pulmonary embolism (see lim2021-05).",
    subgroup='all',supersedes='lim2021-04',extraction_level='abstract',
    quote='Three serious adverse events occurred, of which one was pulmonary embolism.')
df=pd.DataFrame(rows,columns=cols); df.to_csv(OUT+'outcomes.csv',index=False,quoting=csv.QUOTE_MINIMAL,encoding='utf-8')

ipdcols="study_id,patient,subtype,variable,timepoint,timepoint_months,value,unit,source,url,location,quote".split(',')
pd.DataFrame(columns=ipdcols).to_csv(OUT+'ipd.csv',index=False)

su=[]
def u(study_id,column,old,new,source,location,quote): su.append(dict(study_id=study_id,column=column,old_value=old,new_value=new,source=source,location=location,quote=quote))
MED_ES='https://revistasar.org.ar/articulos/inmunoglobulinas-intravenosas-en-pacientes-hospitalizados-con-miopatia-inflamatoria-idiopatica_561'
MED_EN='https://revistasar.org.ar/english/articles/intravenous-immunoglobulins-in-hospitalized-patients-with-idiopathic-inflammatory-myopathy_561'
u('medina2025','year','','2025','URL:'+MED_ES,'article page header (Spanish version)','Año 2025 | Vol. 36 | Nro. 1')
u('medina2025','journal','Revista Argentina de Reumatologia','Revista Argentina de Reumatología 2025;36(1)','URL:'+MED_ES,'article page header (Spanish version)','Año 2025 | Vol. 36 | Nro. 1 Inmunoglobulinas intravenosas en pacientes hospitalizados con miopatía inflamatoria idiopática')
u('medina2025','first_author','Medina','Medina (Gustavo Ariel Medina; confirmed)','URL:'+MED_EN,'author line','Autores: Gustavo Ariel Medina, Carla Muñoz Torres, Rossio Gardenia Ortuño Lobo, Ignacio López')
u('jcr2021','journal','J Clin Rheumatol','J Clin Rheumatol 2021 Dec 01','URL:https://themednet.org/publications/intravenous-immunoglobulin-for-inflammatory-myositis-experience-in-a-tertiary-medical-center','page header','J Clin Rheumatol 2021 Dec 01 Intravenous Immunoglobulin for Inflammatory Myositis: Experience in a Tertiary Medical Center.')
u('jcr2021','concomitant','','other immunomodulatory agents (IVIG given together with other immunomodulators; agents not specified in abstract)','URL:https://themednet.org/publications/intravenous-immunoglobulin-for-inflammatory-myositis-experience-in-a-tertiary-medical-center','abstract (Introduction)','We assessed effectiveness and safety of IVIG when used with other immunomodulatory agents in the treatment of inflammatory myopathies.')
u('huapaya2019','journal','Respir Med 2019 (Jul 1); pages 6-11','Respiratory Medicine (published Jul 1 2019), pages 6-11 (volume not displayed)','URL:https://pure.johnshopkins.edu/en/publications/long-term-treatment-with-human-immunoglobulin-for-antisynthetase-','publication metadata','Pages (from-to)6-11 Number of pages6 JournalRespiratory Medicine StatePublished - Jul 1 2019')
u('lim2021','concomitant','','none during the 9-week study (IVIg monotherapy); 7 patients received rescue medication and ended the study prematurely','PMID:33099648','abstract (Methods/Results)','The standard treatment regimen consisted of IVIg (Privigen) monotherapy for 9 weeks ... Seven patients required rescue medication due to insufficient efficacy and prematurely ended the study.')
u('hara2003','concomitant','','prednisolone (patients steroid-resistant on >50 mg/day for >4 weeks; dose reduced after IVIG in improved patients)','PMID:24387253','abstract','PM/DM was defined as steroid-resistant when the muscle strength of a patient did not improve despite the administration of more than 50 mg prednisolone per day for more than 4 weeks.')
pd.DataFrame(su,columns="study_id,column,old_value,new_value,source,location,quote".split(',')).to_csv(OUT+'study_updates.csv',index=False)

pd.DataFrame(columns="study_id,other_report,relation,evidence,source,url".split(',')).to_csv(OUT+'cohorts.csv',index=False)

sl=[]
with open(OUT+'_searchlog.tsv') as fh:
    for i,line in enumerate(fh,1):
        p=line.rstrip('\n').split('\t')
        corpus,nres,nnew,q,notes=(p+['']*5)[:5]
        sl.append(dict(search_id=f'H6-S{i:03d}',date='2026-11-30',corpus=corpus,query=q,n_results=nres,n_candidates_new=nnew,notes=notes,source='search tool (stored public pages)'))
pd.DataFrame(sl,columns="search_id,date,corpus,query,n_results,n_candidates_new,notes,source".split(',')).to_csv(OUT+'search_log.csv',index=False)
print(len(rows),len(su),len(sl))
